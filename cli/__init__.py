"""Typer front end of cherry-mlx (installed as ``cherry_mlx_cli``): options in, one library call
out."""
