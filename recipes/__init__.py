"""Recipes: absl apps that compose tf-admm and tflite_export (data, models, configs)."""
