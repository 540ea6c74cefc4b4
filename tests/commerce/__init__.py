"""Tests of offer_service.commerce."""
