from routecraft.pool.cli import pool_app

pool_app(prog_name="python -m routecraft.pool")
