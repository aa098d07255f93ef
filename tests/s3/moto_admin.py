"""Sets up the S3 test server (moto) for the offsite tests, with boto3.

    moto_admin.py bucket ENDPOINT NAME [lock]   create a bucket (with Object Lock)
    moto_admin.py user ENDPOINT BUCKET          on a server started with
                                                INITIAL_NO_AUTH_ACTION_COUNT: make a
                                                user allowed everything, then its
                                                bucket; print "KEY SECRET"
    moto_admin.py keys ENDPOINT BUCKET          list the keys in a bucket, one per line
"""
import json
import sys

import boto3


def client(service, endpoint, key="test", secret="test"):
    return boto3.client(service, endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1")


def main(argv):
    cmd, endpoint = argv[1], argv[2]
    if cmd == "bucket":
        lock = len(argv) > 4 and argv[4] == "lock"
        client("s3", endpoint).create_bucket(Bucket=argv[3], ObjectLockEnabledForBucket=lock)
    elif cmd == "user":
        iam = client("iam", endpoint)
        iam.create_user(UserName="cofre")
        key = iam.create_access_key(UserName="cofre")["AccessKey"]
        iam.put_user_policy(UserName="cofre", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        client("s3", endpoint, key["AccessKeyId"], key["SecretAccessKey"]).create_bucket(Bucket=argv[3])
        print(key["AccessKeyId"], key["SecretAccessKey"])
    elif cmd == "keys":
        pages = client("s3", endpoint).get_paginator("list_objects_v2").paginate(Bucket=argv[3])
        for page in pages:
            for obj in page.get("Contents", []):
                print(obj["Key"])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
