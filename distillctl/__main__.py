"""``python -m distillctl`` (also what ``torchrun -m distillctl`` runs)."""

from distillctl.roothelp import main

if __name__ == "__main__":
    main()
