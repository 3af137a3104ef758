"""Domain packs: the taxonomy, event contract, PII settings, prompts and data sources of a team's cases."""

from llm_assets.domain.pack import DomainPack, DomainPackError, current_pack, load_pack

__all__ = ["DomainPack", "DomainPackError", "current_pack", "load_pack"]
