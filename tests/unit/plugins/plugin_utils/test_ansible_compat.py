# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugin_utils/_ansible_compat on the running ansible-core: `make units` runs it on the project's core
(2.19), `make floor` on the oldest supported one (tools/floor/requirements.txt)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.release import __version__ as ansible_version
from ansible.template import Templar

from ansible_collections.qsafe.keyfabric.plugins.plugin_utils._ansible_compat import (
    HAS_DATA_TAGGING,
    AnsibleValueOmittedError,
    evaluate_conditional,
    load_trusted_file,
    trust_as_template,
)

CORE = tuple(int(part) for part in ansible_version.split('.')[:2])


def templar(**variables):
    return Templar(loader=DataLoader(), variables=variables)


def test_data_tagging_is_detected_by_version():
    assert HAS_DATA_TAGGING == (CORE >= (2, 19))


@pytest.mark.parametrize('expression, expected', [
    ('sites | length > 0', True),
    ('sites | length > 2', False),
    ("platform == 'linux' and sites | length > 0", True),
    ("platform in ['ios_xe', 'junos']", False),
    (True, True),
    (False, False),
])
def test_evaluate_conditional(expression, expected):
    result = evaluate_conditional(templar(sites=['a', 'b'], platform='linux'), expression)
    assert result is expected


def test_evaluate_conditional_sees_the_templars_variables_only():
    assert evaluate_conditional(templar(count=3), 'count == 3') is True
    assert evaluate_conditional(templar(count=4), 'count == 3') is False


def test_evaluate_conditional_on_an_undefined_variable_fails():
    with pytest.raises(AnsibleError, match='nowhere'):
        evaluate_conditional(templar(), 'nowhere | length > 0')


def test_a_trusted_string_is_a_template():
    assert str(templar(name='mad-1').template(trust_as_template('{{ name }}.cfg'))) == 'mad-1.cfg'


def test_a_file_of_the_collection_is_trusted(tmp_path):
    path = tmp_path / 'main.yml'
    path.write_text('- name: Site\n  when: count > 1\n  vars:\n    file: "{{ site }}/ios_xe.cfg"\n')
    tasks = load_trusted_file(DataLoader(), str(path))
    assert evaluate_conditional(templar(count=2), tasks[0]['when']) is True
    assert evaluate_conditional(templar(count=1), tasks[0]['when']) is False
    assert str(templar(site='mad-1').template(tasks[0]['vars']['file'])) == 'mad-1/ios_xe.cfg'


def test_value_omitted_error_is_an_ansible_error():
    assert issubclass(AnsibleValueOmittedError, AnsibleError)


@pytest.mark.skipif(not HAS_DATA_TAGGING, reason='before 2.19 omit resolves to a placeholder string, nothing raises')
def test_omit_raises_value_omitted_error():
    with pytest.raises(AnsibleValueOmittedError):
        templar().template(trust_as_template('{{ omit }}'))
