"""hodata.metrics"""
