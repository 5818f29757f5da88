from gpubox.cli.main import run

run()
