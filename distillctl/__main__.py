"""``python -m distillctl`` (also what ``torchrun -m distillctl`` runs)."""

from distillctl.cli import main

if __name__ == "__main__":
    main()
