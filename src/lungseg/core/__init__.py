"""The bottom layer, without torch: label values, task definitions, mask morphology and
metrics. Every other package may import it; it imports none of them."""
