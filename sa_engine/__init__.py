"""The `sa-engine` console command: one entry point over every command line of the project."""
