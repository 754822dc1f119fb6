"""Deployments of siteflow across real sites (Flower for federated strategies)."""
