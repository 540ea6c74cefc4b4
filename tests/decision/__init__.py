"""Tests of offer_service.decision."""
