"""Post-purchase journeys: the timeline of touchpoints, email and SMS offers, tracked links."""
