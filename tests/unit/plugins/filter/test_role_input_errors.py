# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role_input_errors filter is a thin wrapper: the checks are tested in module_utils/test_role_inputs.py."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.filter.role_input_errors import role_input_errors


def test_the_filter_runs_each_role_s_checks():
    assert role_input_errors(dict(macsec_link_platform='linux', macsec_link_mode='push', macsec_link_ios_xe_rollover_overlap=60,
                                  macsec_link_links=[]), 'macsec_link') == []
    assert role_input_errors(dict(macsec_link_platform='eos', macsec_link_mode='push', macsec_link_ios_xe_rollover_overlap=60),
                             'macsec_link') == ['macsec_link_platform must be one of ios_xe, junos, linux']


def test_unknown_role_and_bad_input_are_filter_errors():
    with pytest.raises(AnsibleFilterError, match='role must be one of dmvpn_ios_xe, macsec_link, strongswan_site'):
        role_input_errors({}, 'mesh_site')
    with pytest.raises(AnsibleFilterError, match='must be a dict'):
        role_input_errors([], 'dmvpn_ios_xe')
