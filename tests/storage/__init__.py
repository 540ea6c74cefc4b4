"""Tests of offer_service.storage."""
