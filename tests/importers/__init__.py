"""Tests of offer_service.importers."""
