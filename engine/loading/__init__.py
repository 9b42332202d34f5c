"""Loading: reading rule files and shipment facts from disk into plain data with locations."""
