# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the one base class of the collection's errors. Not a public API.

Every error this collection raises on purpose (key delivery, the key store, the combiner, the
PQC backends, link keying and policies, the mesh inventory, role rendering) subclasses ``KeyfabricError``, so a plugin can
catch them with one ``except`` and show ``message``: a sentence that names what failed and never
holds key bytes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class KeyfabricError(Exception):
    """A failure of this collection; ``message`` says what failed (never key material)."""

    def __init__(self, message='', *args):
        super(KeyfabricError, self).__init__(message, *args)
        self.message = message
