"""Tests of offer_service_tools: the demo storefront, simulator, bandit study and evaluation."""
