from tuner.commands.cli import process_main

# Guarded: tuner's MLflow writer process (tuner.tracking.writer) imports this module again as
# ``__mp_main__``, as multiprocessing does, and must not run a command.
if __name__ == "__main__":
    raise SystemExit(process_main())
