"""Operations: journal, control socket, systemd notify and metrics.

Import the submodules directly (``from flashmm.ops.journal import Journal``);
this package imports nothing heavy so ``flashmm --help`` stays instant.
"""
