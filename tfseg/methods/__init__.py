"""Training algorithms: one `keras.Model` subclass per method, holding its networks and steps.

The trainer (`tfseg.training`) drives any of them through the small contract of
`tfseg.methods.base.Method`.
"""
