"""A private moto S3 server with signature checking and an Object Lock bucket, for the S3 sink
tests (launched by mcptrail_test_support::siem::MotoS3).

Usage: moto_s3.py PORT BUCKET

Moto checks SigV4 signatures and IAM policies once INITIAL_NO_AUTH_ACTION_COUNT requests have
been served; the first four (IAM user, its access key, its policy, the bucket) set up a user
whose key the test signs with. Then one JSON line on stdout:
  {"endpoint": "http://127.0.0.1:PORT", "bucket": ..., "access_key_id": ..., "secret_access_key": ...}
and the server runs until stdin closes (the test drops the launcher) or it is killed.
"""

import json
import os
import sys

SETUP_ACTIONS = 4
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)

from moto.server import ThreadedMotoServer  # noqa: E402  (after the environment is set)
import boto3  # noqa: E402


def main() -> None:
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    setup = dict(endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="AKIASETUPSETUPSETUP0", aws_secret_access_key="setup")
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="mcptrail-shipper")
    key = iam.create_access_key(UserName="mcptrail-shipper")["AccessKey"]
    iam.put_user_policy(
        UserName="mcptrail-shipper",
        PolicyName="archive",
        PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }),
    )
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=key["AccessKeyId"],
                      aws_secret_access_key=key["SecretAccessKey"])
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    print(json.dumps({
        "endpoint": endpoint,
        "bucket": bucket,
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": key["SecretAccessKey"],
    }), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
