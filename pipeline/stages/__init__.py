"""The stages, one module each, named by its verb: extract, keyphrases (analysis), cluster,
synthesize, select, train, evaluate. A stage runs with the parameters it is given (model and
adapter included) and never asks the loop: it imports the layers below and other stages."""
