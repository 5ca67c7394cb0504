"""Models that ship with sdkit: ``shapes``, the embedded tiny text-to-image model (see ``sdkit.models.shapes``)."""
