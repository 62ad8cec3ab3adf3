"""Tools that explain a model from its IR: the card, the plain-words description, the diagram, the
architecture diff, the gallery, the divergence report, coverage and the README's figures."""
