"""Tests of offer_service.web."""
