"""The domain packs shipped with llm-assets (folders of data; `payments_ops` also carries its sample
generator, dev and test tooling that invents payments events)."""
