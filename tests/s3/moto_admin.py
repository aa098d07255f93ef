"""Sets up the S3 test server (moto) for the offsite tests, with boto3.

    moto_admin.py bucket ENDPOINT NAME [lock]   create a bucket (with Object Lock)
    moto_admin.py user ENDPOINT BUCKET          on a server started with
                                                INITIAL_NO_AUTH_ACTION_COUNT: make a
                                                user allowed everything, then its
                                                bucket; print "KEY SECRET"
    moto_admin.py keys ENDPOINT BUCKET          list the keys in a bucket, one per line
    moto_admin.py put ENDPOINT BUCKET KEY FILE [lock]
                                                write FILE's bytes at KEY (over what is
                                                there), with a governance lock for a day
    moto_admin.py plant ENDPOINT BUCKET PREFIX COUNT SIGNED
                                                write COUNT tiny objects named like archives
                                                under PREFIX, from 2099 on, the first SIGNED
                                                of them with a junk signature
    moto_admin.py versions ENDPOINT BUCKET      every version: KEY VERSION-ID latest|old SIZE
    moto_admin.py retention ENDPOINT BUCKET KEY the lock's date on the oldest version of KEY
                                                (the one cofre wrote), or "none"
"""
import datetime
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
    elif cmd == "put":
        bucket, key, path = argv[3], argv[4], argv[5]
        s3 = client("s3", endpoint)
        with open(path, "rb") as f:
            version = s3.put_object(Bucket=bucket, Key=key, Body=f.read()).get("VersionId")
        if len(argv) > 6 and argv[6] == "lock":
            # (moto keeps no lock given with the PutObject itself.)
            until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
            s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    elif cmd == "plant":
        bucket, prefix, count, signed = argv[3], argv[4], int(argv[5]), int(argv[6])
        s3 = client("s3", endpoint)
        start = datetime.datetime(2099, 1, 1)
        for i in range(count):
            name = (start + datetime.timedelta(seconds=i)).strftime("backup_%Y-%m-%dT%H-%M-%S.tar.gz.age")
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=b"junk")
            if i < signed:
                s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}.minisig", Body=b"junk signature")
    elif cmd == "versions":
        pages = client("s3", endpoint).get_paginator("list_object_versions").paginate(Bucket=argv[3])
        for page in pages:
            for v in page.get("Versions", []):
                print(v["Key"], v["VersionId"], "latest" if v["IsLatest"] else "old", v["Size"])
    elif cmd == "retention":
        s3 = client("s3", endpoint)
        versions = [v for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=argv[3], Prefix=argv[4]) for v in page.get("Versions", []) if v["Key"] == argv[4]]
        oldest = min(versions, key=lambda v: v["LastModified"])
        # (moto has no GetObjectRetention; HeadObject carries the date.)
        got = s3.head_object(Bucket=argv[3], Key=argv[4], VersionId=oldest["VersionId"])
        until = got.get("ObjectLockRetainUntilDate")
        print(until.strftime("%Y-%m-%dT%H:%M:%SZ") if until else "none")
    elif cmd == "keys":
        pages = client("s3", endpoint).get_paginator("list_objects_v2").paginate(Bucket=argv[3])
        for page in pages:
            for obj in page.get("Contents", []):
                print(obj["Key"])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
