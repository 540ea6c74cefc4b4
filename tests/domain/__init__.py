"""Tests of offer_service.domain."""
