"""A small model of wazuh-analysisd's rule matching, for the features criminal_ip_ruleset.xml uses.

Modelled on src/analysisd/rules.c as summarised in shared/reference/wazuh-integratord.md:
- the stock `json` decoder (prematch `^{\\s*"`) flattens objects to dotted names and turns values
  into strings: true/false, integers as %i, floats as %f, null as "null", arrays as JSON text;
- `<field>` is osregex by default (case-insensitive, unanchored unless ^/$, `|` separates
  alternatives) or pcre2 with type="pcre2" (case-sensitive); a missing field never matches;
- of the children of a matching rule that match, a level-0 child wins, else the highest level,
  ties going to the one loaded first; evaluation then continues below the winner.
Anything else in a rule (a tag, an osregex metacharacter) is refused, so the model cannot silently
pass a rule that a real manager would read differently.
"""
import json
import re
import xml.etree.ElementTree as ElementTree

STATIC_FIELDS = {'srcip', 'dstip', 'srcport', 'dstport', 'protocol', 'action', 'user', 'srcuser',
                 'dstuser', 'id', 'status', 'url', 'data', 'extra_data', 'system_name', 'location',
                 'full_log', 'program_name', 'hostname'}
RULE_OPTIONS = {'alert_by_email', 'no_email_alert', 'no_log', 'no_full_log', 'no_counter'}
SUPPORTED_TAGS = {'decoded_as', 'field', 'if_sid', 'description', 'options', 'group', 'mitre'}
OSREGEX_SPECIAL = set('\\.*+()[]{}?')


class RuleError(ValueError):
    """The ruleset uses something this model (or Wazuh) would not accept."""


def load_rules(path: str) -> list:
    """Rules in load order, each a dict; raises RuleError on anything outside the model."""
    with open(path, encoding='utf-8') as handle:
        root = ElementTree.fromstring(f'<root>{handle.read()}</root>')
    rules = []
    for group in root:
        if group.tag != 'group':
            raise RuleError(f'top-level <{group.tag}> where only <group> is allowed')
        for element in group:
            if element.tag != 'rule':
                raise RuleError(f'<{element.tag}> inside <group>')
            rules.append(parse_rule(element, group.get('name', '')))
    return rules


def parse_rule(element, group_name: str) -> dict:
    rule = {'id': element.get('id'), 'level': int(element.get('level')), 'if_sid': [],
            'decoded_as': None, 'fields': [], 'groups': [group_name], 'options': [],
            'description': '', 'mitre': []}
    for child in element:
        if child.tag not in SUPPORTED_TAGS:
            raise RuleError(f'rule {rule["id"]}: <{child.tag}> is not modelled')
        text = (child.text or '').strip()
        if child.tag == 'if_sid':
            rule['if_sid'] += [part.strip() for part in text.replace(',', ' ').split()]
        elif child.tag == 'decoded_as':
            rule['decoded_as'] = text
        elif child.tag == 'field':
            rule['fields'].append({'name': child.get('name'), 'pattern': child.text or '',
                                   'type': child.get('type', 'osregex'),
                                   'negate': child.get('negate', 'no') == 'yes'})
        elif child.tag == 'group':
            rule['groups'].append(child.text or '')
        elif child.tag == 'options':
            rule['options'].append(text)
        elif child.tag == 'description':
            rule['description'] = text
        else:
            rule['mitre'] += [(item.text or '').strip() for item in child.iter('id')]
    return rule


def group_names(rules: list) -> set:
    names = set()
    for rule in rules:
        for text in rule['groups']:
            names.update(part for part in text.split(',') if part)
    return names


def flatten(value, prefix: str = '') -> dict:
    """The fields the json decoder makes from an event, as the strings rules see."""
    if isinstance(value, dict):
        fields = {}
        for key, item in value.items():
            fields.update(flatten(item, f'{prefix}.{key}' if prefix else key))
        return fields
    if isinstance(value, bool):
        text = 'true' if value else 'false'
    elif value is None:
        text = 'null'
    elif isinstance(value, int):
        text = '%i' % value
    elif isinstance(value, float):
        text = '%f' % value
    elif isinstance(value, list):
        text = json.dumps(value, separators=(',', ':'))
    else:
        text = str(value)
    return {prefix: text}


def osregex_matches(pattern: str, text: str) -> bool:
    for alternative in pattern.split('|'):
        core = alternative[1:] if alternative.startswith('^') else alternative
        core = core[:-1] if core.endswith('$') else core
        if OSREGEX_SPECIAL & set(core) or '^' in core or '$' in core:
            raise RuleError(f'osregex "{pattern}" uses syntax this model does not cover')
        regex = ('^' if alternative.startswith('^') else '') + re.escape(core) + \
                ('$' if alternative.endswith('$') else '')
        if re.search(regex, text, re.IGNORECASE):
            return True
    return False


def field_matches(condition: dict, fields: dict) -> bool:
    if condition['name'] not in fields:
        return False
    text = fields[condition['name']]
    if condition['type'] == 'pcre2':
        found = re.search(condition['pattern'], text) is not None
    elif condition['type'] == 'osregex':
        found = osregex_matches(condition['pattern'], text)
    else:
        raise RuleError(f'field type {condition["type"]} is not modelled')
    return found != condition['negate']


def rule_matches(rule: dict, fields: dict) -> bool:
    if rule['decoded_as'] not in (None, 'json') or fields is None:
        return False
    return all(field_matches(condition, fields) for condition in rule['fields'])


def evaluate(rules: list, log: str):
    """The rule that fires for one log line (a dict), or None."""
    try:
        fields = flatten(json.loads(log)) if re.match(r'^{\s*"', log) else None
    except ValueError:
        fields = None
    children = {}
    for rule in rules:
        for parent in rule['if_sid']:
            children.setdefault(parent, []).append(rule)
    candidates = [rule for rule in rules if not rule['if_sid']]
    fired = None
    while True:
        matching = [rule for rule in candidates if rule_matches(rule, fields)]
        if not matching:
            return fired
        zero = [rule for rule in matching if rule['level'] == 0]
        fired = zero[0] if zero else max(matching, key=lambda rule: rule['level'])
        candidates = children.get(fired['id'], [])
