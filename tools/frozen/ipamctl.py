"""The frozen build's ``ipamctl`` executable: the console script's entry."""
from host_local_sqlite_cli.main import run

run()
