#!/usr/bin/env python3
"""`make install` / `make uninstall` for custom-criminalip (standard library only).

install:   script -> integrations/ (0750 root:wazuh), ruleset -> etc/rules/ (0660 wazuh:wazuh),
           cache folder var/criminalip (0750 wazuh:wazuh); with CRIMINALIP_API_KEY (or
           CRIMINALIP_API_KEY_FILE) also etc/criminalip.key (0640 root:wazuh), the options file
           etc/custom-criminalip.json naming it, and the <integration> block in etc/ossec.conf,
           after a timestamped backup.
uninstall: undoes exactly what the manifest says install did; ossec.conf backups are kept.
Ownership steps only warn where the wazuh user or group does not exist (test trees, packaging).
"""
import argparse
import grp
import json
import os
import pwd
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = 'var/criminalip/.install-manifest.json'
BEGIN = '<!-- custom-criminalip: begin (added by make install; make uninstall removes it) -->'
END = '<!-- custom-criminalip: end -->'


class InstallError(Exception):
    """Something the operator must fix before installing."""


def owner_ids(user: str, group: str):
    """(uid, gid) for user:group, or None with a warning when either does not exist."""
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def place(source: str, target: str, mode: int, user: str, group: str, done: list) -> None:
    """Copy source to target atomically with mode and owner; record it in done."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = target + '.installing'
    shutil.copyfile(source, temporary)
    set_owner_and_mode(temporary, mode, user, group, shown=target)
    os.replace(temporary, target)
    done.append(target)
    print(f'  installed {target} ({mode:04o} {user}:{group})')


def set_owner_and_mode(path: str, mode: int, user: str, group: str, shown: str = '') -> None:
    ids = owner_ids(user, group)
    if ids is None:
        print(f'  WARNING: user {user} or group {group} does not exist; {shown or path} keeps its owner')
    else:
        try:
            os.chown(path, *ids)
        except PermissionError:
            print(f'  WARNING: not allowed to chown {shown or path} to {user}:{group} (run as root)')
    os.chmod(path, mode)


def integration_block() -> str:
    """The snippet's <integration> element, exactly as the README shows it."""
    with open(os.path.join(SOURCE, 'ossec.conf.snippet'), encoding='utf-8') as handle:
        snippet = handle.read()
    start = snippet.index('<integration>')
    return snippet[start:snippet.index('</integration>', start) + len('</integration>')]


def parse_conf(text: str, path: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring('<root>' + re.sub(r'^\s*<\?xml[^>]*\?>', '', text) + '</root>')
    except ElementTree.ParseError as error:
        raise InstallError(f'{path} cannot be parsed ({error}); fix it first, nothing was changed')


def backup(path: str) -> str:
    stamp, number = time.strftime('%Y%m%d-%H%M%S'), 1
    copy = f'{path}.criminalip-{stamp}.bak'
    while os.path.exists(copy):                 # two changes within one second
        copy, number = f'{path}.criminalip-{stamp}-{number}.bak', number + 1
    shutil.copy2(path, copy)
    print(f'  backup of {path}: {copy}')
    return copy


def write_like(path: str, text: str) -> None:
    """Replace path's content, keeping its mode and owner."""
    info = os.stat(path)
    temporary = path + '.criminalip-new'
    with open(temporary, 'w', encoding='utf-8', newline='') as handle:
        handle.write(text)
    os.chmod(temporary, info.st_mode & 0o7777)
    try:
        os.chown(temporary, info.st_uid, info.st_gid)
    except PermissionError:
        pass
    os.replace(temporary, path)


def add_integration(conf: str) -> bool:
    """Insert our block before the last </ossec_config>; False when one is already there."""
    with open(conf, encoding='utf-8', newline='') as handle:
        text = handle.read()
    document = parse_conf(text, conf)
    if any((item.findtext('name') or '').strip() == 'custom-criminalip'
           for item in document.iter('integration')):
        print(f'  {conf} already has a custom-criminalip <integration> block; left as it is')
        return False
    if 'yes' not in [(item.text or '').strip() for item in document.iter('jsonout_output')]:
        print(f'  WARNING: {conf} needs <jsonout_output>yes</jsonout_output> in <global>')
    closing = text.rfind('</ossec_config>')
    if closing < 0:
        raise InstallError(f'{conf} has no </ossec_config>; nothing was changed')
    block = '\n'.join('  ' + line for line in integration_block().splitlines())
    insert = f'  {BEGIN}\n{block}\n  {END}\n'
    backup(conf)
    write_like(conf, text[:closing] + insert + text[closing:])
    print(f'  added the <integration> block to {conf}')
    return True


def remove_integration(conf: str) -> None:
    with open(conf, encoding='utf-8', newline='') as handle:
        text = handle.read()
    start = text.find('  ' + BEGIN)
    end = text.find(END, start)
    if start < 0 or end < 0:
        print(f'  {conf}: no block added by make install; left as it is')
        return
    backup(conf)
    write_like(conf, text[:start] + text[end + len(END) + 1:])
    print(f'  removed the <integration> block from {conf}')


def read_key() -> str:
    key = os.environ.get('CRIMINALIP_API_KEY', '').strip()
    key_file = os.environ.get('CRIMINALIP_API_KEY_FILE', '')
    if not key and key_file:
        with open(key_file, encoding='utf-8') as handle:
            key = handle.read().strip()
    return key


def install(root: str, wazuh_home: str) -> None:
    done, created = [], []
    place(os.path.join(SOURCE, 'custom-criminalip'),
          os.path.join(root, 'integrations', 'custom-criminalip'), 0o750, 'root', 'wazuh', done)
    place(os.path.join(SOURCE, 'criminal_ip_ruleset.xml'),
          os.path.join(root, 'etc', 'rules', 'criminal_ip_ruleset.xml'), 0o660, 'wazuh', 'wazuh', done)
    cache = os.path.join(root, 'var', 'criminalip')
    if not os.path.isdir(cache):
        os.makedirs(cache)
        created.append(cache)
    set_owner_and_mode(cache, 0o750, 'wazuh', 'wazuh')
    manifest = {'files': done, 'folders': created, 'ossec_conf': False}
    key = read_key()
    if key:
        key_path = os.path.join(root, 'etc', 'criminalip.key')
        with open(key_path + '.installing', 'w', encoding='utf-8') as handle:
            handle.write(key + '\n')
        set_owner_and_mode(key_path + '.installing', 0o640, 'root', 'wazuh', shown=key_path)
        os.replace(key_path + '.installing', key_path)
        done.append(key_path)
        print(f'  wrote the API key to {key_path} (0640 root:wazuh)')
        write_options(root, wazuh_home, done)
        conf = os.path.join(root, 'etc', 'ossec.conf')
        if os.path.exists(conf):
            manifest['ossec_conf'] = add_integration(conf) or \
                previous_manifest(root).get('ossec_conf', False)
        else:
            print(f'  WARNING: {conf} not found; add ossec.conf.snippet to your configuration by hand')
    else:
        print('  no CRIMINALIP_API_KEY given: ossec.conf left untouched '
              '(see README: "Install by hand", step 4)')
    merge_manifest(root, manifest)


def write_options(root: str, wazuh_home: str, done: list) -> None:
    """etc/custom-criminalip.json naming the key file, unless the operator already has one."""
    path = os.path.join(root, 'etc', 'custom-criminalip.json')
    key_file = os.path.join(wazuh_home, 'etc', 'criminalip.key')
    if os.path.exists(path):
        print(f'  {path} exists; left as it is (it should name "api_key_file": "{key_file}")')
        return
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump({'api_key_file': key_file}, handle)
        handle.write('\n')
    set_owner_and_mode(path, 0o640, 'root', 'wazuh')
    done.append(path)
    print(f'  wrote {path} (0640 root:wazuh) naming the key file')


def previous_manifest(root: str) -> dict:
    try:
        with open(os.path.join(root, MANIFEST), encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def merge_manifest(root: str, manifest: dict) -> None:
    """Keep the union of what every install run did, so uninstall undoes all of it."""
    previous = previous_manifest(root)
    for name in ('files', 'folders'):
        manifest[name] = sorted(set(manifest[name]) | set(previous.get(name, [])))
    with open(os.path.join(root, MANIFEST), 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1)


def uninstall(root: str) -> None:
    manifest = previous_manifest(root)
    if not manifest:
        raise InstallError(f'{os.path.join(root, MANIFEST)} not found: nothing to uninstall')
    if manifest.get('ossec_conf'):
        remove_integration(os.path.join(root, 'etc', 'ossec.conf'))
    for path in manifest['files']:
        if os.path.exists(path):
            os.unlink(path)
            print(f'  removed {path}')
    os.unlink(os.path.join(root, MANIFEST))
    for folder in manifest['folders']:
        shutil.rmtree(folder, ignore_errors=True)
        print(f'  removed {folder} and the cached lookups in it')


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('action', choices=('install', 'uninstall'))
    parser.add_argument('--wazuh-home', default='/var/ossec')
    parser.add_argument('--destdir', default='')
    args = parser.parse_args(argv[1:])
    root = args.destdir.rstrip('/') + args.wazuh_home if args.destdir else args.wazuh_home
    if not os.path.isdir(root):
        print(f'{root} does not exist: is Wazuh installed there? (set WAZUH_HOME=...)', file=sys.stderr)
        return 1
    try:
        install(root, args.wazuh_home) if args.action == 'install' else uninstall(root)
    except (InstallError, OSError) as error:
        print(f'{args.action} failed: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
