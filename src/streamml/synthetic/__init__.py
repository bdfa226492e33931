"""Synthetic data: dataset profiles, copula sampling, the generator with drift, fidelity, the producer."""
