"""The passes of the lowering, one module each, run in order by :func:`codegen.lower.lower` (the
driver pattern of pystencils): ``classify``, ``storage``, ``emission``, ``fusion``, ``finishing``.
Each reads and fills in one :class:`codegen.lower.Lowering`."""
