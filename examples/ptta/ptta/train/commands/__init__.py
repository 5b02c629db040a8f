"""`ptta` sub-commands of the training stage: each module has add_arguments(parser) and run(args)."""
