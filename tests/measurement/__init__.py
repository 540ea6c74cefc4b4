"""Tests of offer_service.measurement."""
