"""Field provisioning of sensor nodes: a pure plan (``plan``) executed by a thin
runner (``runner``), the node config checked by the firmware's own validator
(``config``), QR labels (``label``), the audit trail (``audit``) and the
``streetsense device …`` command line (``cli``)."""
