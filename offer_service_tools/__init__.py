"""Tools beside the service: the demo storefront, the simulator, the bandit study, evaluation."""
