"""Tests of offer_service.serving."""
