"""hodata.fitting"""
