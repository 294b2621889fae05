"""Build-time tools: code generation helpers run by scripts/gen and devstack."""
