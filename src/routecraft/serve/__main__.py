"""`python -m routecraft.serve serve|usage ...` (the same commands as `routecraft serve` / `routecraft usage`)."""

from routecraft.serve.cli import serve_app

serve_app(prog_name="python -m routecraft.serve")
