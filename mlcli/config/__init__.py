"""The YAML config: its pydantic schema (`schema`, with `training` for the `model:` and
`training:` sections), reading it with `${VAR}` and paths resolved once (`loading`), dotted keys
and `--set` overrides (`overrides`), and its error messages (`messages`)."""
