"""The domain: products, orders, surfaces, tokens, money and time, as plain records; no I/O."""
