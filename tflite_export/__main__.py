"""``python -m tflite_export``: see :mod:`tflite_export.cli`."""

from absl import flags

from tflite_export import cli

flags.adopt_module_key_flags(cli)

if __name__ == "__main__":
    cli.entry_point()
