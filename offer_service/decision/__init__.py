"""The decision: candidates, business rules and ranking; pure, data in and offers out."""
