"""Dev tooling: what runs llm-assets on a laptop, never in a deployment.

Local services (`broker`: tansu, `milvus`: `milvus-lite server`, `process`: ports and
process shutdown), the daemon emulation that drains Kafka in-process (`daemon`), sample
producing and the live sample stream (`samples`), the `dev` command's supervisor
(`dev_command`) and the end-to-end demo (`demo`). Domains never import this package;
it imports them.
"""
