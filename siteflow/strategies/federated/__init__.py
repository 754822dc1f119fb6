"""Federated strategies: one round API, driven in-process or on Flower."""
