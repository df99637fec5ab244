"""Group-level learning: outcome and cohorts, features, model pipeline, nested CV, permutations, model files."""
