# -*- coding: utf-8 -*-
# Copyright: (c) 2026, VisionSuit contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The MinIO/S3 connection options shared by minio_bucket and minio_sync."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  endpoint:
    description:
      - URL of the S3 endpoint, for example C(http://192.168.1.10:9000).
      - When absent, the connection is read from O(env_file).
    type: str
  access_key:
    description: Access key. Required with O(endpoint); overrides C(MINIO_ACCESS_KEY) of O(env_file).
    type: str
  secret_key:
    description: Secret key. Required with O(endpoint); overrides C(MINIO_SECRET_KEY) of O(env_file).
    type: str
  region:
    description: Signing region (C(MINIO_REGION)); V(us-east-1) when not set.
    type: str
  ca_bundle:
    description: PEM file of the CA that signed the server certificate (https endpoints).
    type: path
  validate_certs:
    description: Verify the TLS certificate of https endpoints.
    type: bool
    default: true
  env_file:
    description:
      - File with C(MINIO_ENDPOINT), C(MINIO_ACCESS_KEY), C(MINIO_SECRET_KEY) ... used when O(endpoint) is not
        given. Defaults to C(/etc/comfyui/minio.env).
    type: path
"""
