"""hodata.shards"""
