"""Tests of offer_service.journeys."""
