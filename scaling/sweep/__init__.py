"""Sweeps: plan (config -> cells), claims (who trains what), launch (workers on one machine), status (state from
the results directory), estimate (time from a throughput probe)."""
