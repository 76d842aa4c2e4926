"""The mission policy: loading and validating `policies/`, the compiled evaluator, reasons."""
